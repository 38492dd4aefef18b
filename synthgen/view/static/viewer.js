"use strict";
const TOKEN = document.body.dataset.token;
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let offset = 0, pageRows = 50, lastTotal = 0;

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v != null) url.searchParams.set(k, v);
  const response = await fetch(url, {headers: {"X-Synthgen-Token": TOKEN}});
  const body = await response.json();
  if (!body.ok) throw new Error(body.error || ("HTTP " + response.status));
  return body.data;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") node.textContent = v == null ? "" : String(v);
    else if (k === "cls") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function barChart(pairs, title) {
  // horizontal bars: [[label, count], ...]
  const w = 420, row = 18, h = row * pairs.length + 24, max = Math.max(1, ...pairs.map((p) => p[1]));
  const svg = svgEl("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img"});
  const t = svgEl("text", {x: 0, y: 12, "font-size": 12}); t.textContent = title; svg.append(t);
  pairs.forEach(([label, n], i) => {
    const y = 20 + i * row;
    const name = svgEl("text", {x: 0, y: y + 12, "font-size": 11}); name.textContent = String(label).slice(0, 18);
    const bar = svgEl("rect", {x: 120, y: y + 2, height: row - 5, width: Math.max(1, 250 * n / max), fill: "#4a7fb0"});
    const num = svgEl("text", {x: 125 + 250 * n / max, y: y + 12, "font-size": 11}); num.textContent = n.toLocaleString();
    svg.append(name, bar, num);
  });
  return svg;
}

function histogram(values, title) {
  // probabilities in [0, 1], 10 bins
  const bins = new Array(10).fill(0);
  for (const v of values) bins[Math.min(9, Math.floor(v * 10))] += 1;
  const w = 420, h = 110, max = Math.max(1, ...bins);
  const svg = svgEl("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img"});
  const t = svgEl("text", {x: 0, y: 12, "font-size": 12}); t.textContent = title; svg.append(t);
  bins.forEach((n, i) => {
    const bh = 70 * n / max;
    svg.append(svgEl("rect", {x: 10 + i * 40, y: 90 - bh, width: 36, height: bh, fill: heat(i / 10 + 0.05)}));
    const lab = svgEl("text", {x: 12 + i * 40, y: 104, "font-size": 10}); lab.textContent = (i / 10).toFixed(1);
    svg.append(lab);
  });
  return svg;
}

function heat(p) { return `hsl(${Math.round(120 * p)}, 75%, ${Math.round(62 + 26 * p)}%)`; }

function filters() {
  return {stage: $("stage").value, finish_reason: $("finish").value, score_min: $("score-min").value,
          score_max: $("score-max").value, q: $("q").value, where: $("where").value};
}

async function loadFacets() {
  const f = await api("/api/facets");
  $("total").textContent = `${f.total.toLocaleString()} answers` +
    (f.verdicts ? ` · ${f.verdicts.toLocaleString()} judge verdicts (not counted as answers)` : "");
  if (f.live_run) {
    $("live").textContent = `run ${f.live_run} is writing: live`;
    $("live").classList.remove("hidden");
  }
  const stage = $("stage"); stage.replaceChildren(el("option", {value: "", text: "all answers"}));
  if (f.verdicts) stage.append(el("option", {value: "*", text: "answers and judge verdicts"}));
  for (const s of f.stages) stage.append(el("option", {value: s.value, title: s.funnel, text: `${s.label} (${s.rows})`}));
  $("stages").replaceChildren(...(f.stages.length ? [el("h3", {text: "Stages: planned → answered → kept"}),
    el("table", {}, el("tbody", {}, ...f.stages.map((s) => el("tr", {}, el("td", {text: s.label}), el("td", {text: s.funnel})))))] : []));
  const finish = $("finish"); finish.replaceChildren(el("option", {value: "", text: "any"}));
  for (const [name, n] of f.finish_reasons) finish.append(el("option", {value: name, text: `${name} (${n})`}));
  $("score-note").textContent = f.score.rows ? `scores ${f.score.min} to ${f.score.max}` :
    "no row has a score yet (a judge stage writes one)";
  $("stage-note").textContent = f.stage_source === "plan" ? "one per input (no recipe stages)" : "";
  $("columns").textContent = "optional columns here: " + (f.columns.join(", ") || "none");
  $("chart").replaceChildren(barChart(f.finish_reasons, "finish reasons"));
  $("evals-tab").disabled = !f.evals;
}

async function loadRows() {
  $("list-error").textContent = "";
  let data;
  try { data = await api("/api/rows", {...filters(), offset, limit: pageRows}); }
  catch (e) { $("list-error").textContent = e.message; return; }
  lastTotal = data.total;
  $("count").textContent = `${data.total.toLocaleString()} rows match; ${data.offset + 1}-${data.offset + data.rows.length}`;
  const body = $("rows"); body.replaceChildren();
  for (const r of data.rows) {
    const tr = el("tr", {"data-id": r.request_id, onclick: () => openRow(r.request_id)},
      el("td", {text: r.run_id}), el("td", {text: r.finish_reason ?? "(none)"}),
      el("td", {text: r.completion_tokens ?? "-"}), el("td", {text: r.score ?? "-"}), el("td", {text: r.kept ?? ""}),
      el("td", {text: r.prompt}), el("td", {text: r.answer}));
    body.append(tr);
  }
}

function section(title, ...content) { return el("section", {}, el("h3", {text: title}), ...content); }
function pretty(value) { return el("pre", {text: typeof value === "string" ? value : JSON.stringify(value, null, 2)}); }

async function openRow(id) {
  location.hash = "row=" + encodeURIComponent(id);
  for (const tr of document.querySelectorAll("tr.open")) tr.classList.remove("open");
  const tr = document.querySelector(`tr[data-id="${CSS.escape(id)}"]`); if (tr) tr.classList.add("open");
  const box = $("detail"); box.replaceChildren(el("p", {cls: "note", text: "loading…"}));
  let r;
  try { r = await api("/api/row", {id}); } catch (e) { box.replaceChildren(el("p", {cls: "error", text: e.message})); return; }
  const parts = [el("p", {cls: "note", text: `${r.request_id} · run ${r.run_id} · line ${r.line} · sample ${r.sample_index} · ` +
    `${r.finish_reason ?? "no finish reason"} · ${r.prompt_tokens ?? "?"} → ${r.completion_tokens ?? "?"} tokens · ` +
    `${r.latency_ms == null ? "?" : Math.round(r.latency_ms)} ms · ${r.attempts} attempt(s) · ${r.model ?? ""}`})];
  const messages = Array.isArray(r.messages) ? r.messages : [{role: "?", content: r.messages}];
  parts.push(section("Prompt", ...messages.map((m) => el("div", {}, el("b", {text: m.role}),
    pretty(typeof m.content === "string" ? m.content : JSON.stringify(m.content))))));
  parts.push(section("Answer", r.response == null ? el("p", {cls: "note", text: "no text (tool calls or a refusal)"}) : pretty(r.response)));
  if ("reasoning" in r && r.reasoning) parts.push(section("Reasoning", pretty(r.reasoning)));
  if ("tool_calls" in r && r.tool_calls) parts.push(section("Tool calls", pretty(r.tool_calls)));
  if ("refusal" in r && r.refusal) parts.push(section("Refusal", pretty(r.refusal)));
  if ("json" in r && r.json != null) parts.push(section("Parsed JSON", pretty(r.json)));
  if (r.judgments && r.judgments.length) parts.push(section(`Judged (score ${r.score ?? "-"})`,
    ...r.judgments.map((j) => pretty(j))));
  if (r.stages && r.stages.length) parts.push(section("Recipe stages", el("table", {}, el("tbody", {},
    ...r.stages.map((s) => el("tr", {}, el("td", {text: `${s.recipe} · ${s.stage}`}),
      el("td", {text: s.kept ? "kept" : `removed by ${s.rule}: ${s.detail ?? ""}`})))))));
  if (r.logprobs) {
    const heatmap = el("div", {cls: "heat", id: "heatmap"});
    const probs = [];
    for (const t of r.logprobs) {
      const p = Math.exp(t.logprob ?? 0); probs.push(p);
      const alts = (t.top || []).map(([tok, lp]) => `${JSON.stringify(tok)} ${Math.exp(lp).toFixed(3)}`).join(", ");
      const span = el("span", {cls: "tok", title: `p ${p.toFixed(3)} (logprob ${(t.logprob ?? 0).toFixed(3)})` +
        (alts ? `\ntop: ${alts}` : ""), text: t.token});
      span.style.backgroundColor = heat(p);
      heatmap.append(span);
    }
    parts.push(section("Logprob heat-map (the teacher's probability of each answer token; hover for the alternatives)",
      heatmap, histogram(probs, "token probabilities")));
  } else {
    parts.push(el("p", {cls: "note", text: "no logprobs stored for this answer (--logprobs K stores them)"}));
  }
  if (r.students && r.students.length) {
    parts.push(section("Student vs teacher", el("div", {cls: "compare", id: "compare"},
      el("div", {}, el("b", {text: "teacher"}), pretty(r.response ?? "")),
      ...r.students.map((s) => el("div", {}, el("b", {text: `${s.label} (${s.model_dir}, eval ${s.eval_id})`}), pretty(s.text ?? ""))))));
  }
  parts.push(section("Metadata", pretty(r.metadata ?? {})), section("Parameters", pretty(r.params ?? {})));
  box.replaceChildren(...parts);
}

async function showEvals() {
  const box = $("detail");
  try {
    const evals = await api("/api/evals");
    const keys = [...new Set(evals.flatMap((e) => Object.keys(e.metrics)))].slice(0, 8);
    box.replaceChildren(section("Evaluations", el("table", {}, el("thead", {}, el("tr", {},
      ...["eval", "when", "label", "model", "rows", ...keys].map((k) => el("th", {text: k})))),
      el("tbody", {}, ...evals.map((e) => el("tr", {}, el("td", {text: e.eval_id}), el("td", {text: e.created_at}),
        el("td", {text: e.label}), el("td", {text: e.model_dir}), el("td", {text: e.rows}),
        ...keys.map((k) => el("td", {text: typeof e.metrics[k] === "number" ? e.metrics[k].toFixed(4) : (e.metrics[k] ?? "-")}))))))));
  } catch (e) { box.replaceChildren(el("p", {cls: "error", text: e.message})); }
}

function apply() { offset = 0; loadRows(); }
$("apply").addEventListener("click", apply);
for (const id of ["q", "score-min", "score-max"]) $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
$("where").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) apply(); });
$("prev").addEventListener("click", () => { offset = Math.max(0, offset - pageRows); loadRows(); });
$("next").addEventListener("click", () => { if (offset + pageRows < lastTotal) { offset += pageRows; loadRows(); } });
$("evals-tab").addEventListener("click", showEvals);

(async () => {
  try { await loadFacets(); } catch (e) { $("list-error").textContent = e.message; }
  await loadRows();
  const m = location.hash.match(/^#row=(.+)$/);
  if (m) await openRow(decodeURIComponent(m[1]));
  document.body.dataset.ready = "1";
})();
