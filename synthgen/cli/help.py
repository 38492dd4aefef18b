"""`--help` as the tools people like write it: options in groups, defaults shown, required
options marked, an example or two per command, and the environment variables it reads.

Kept apart from the commands (each lives in the module of its idea, some in other rooms):
`decorate(command, name)` gives a loaded command its groups, examples and environment from
the tables below, so a command's own module stays as it is and its flags and behaviour do
not change. Options no group names are listed under "Options".
"""

from __future__ import annotations

from types import MethodType

import click

ENV = {
    "OPENAI_API_KEY": "the teacher's API key (--api-key-env names another variable); never stored or printed",
    "SYNTHGEN_LLAMA_SERVER": "a llama-server binary to use instead of the one `synthgen teacher build` makes",
    "SYNTHGEN_CACHE": "the student's model cache (default $XDG_CACHE_HOME/synthgen, else ~/.cache/synthgen)",
    "XDG_CACHE_HOME": "the base of synthgen's caches: the llama-server build (synthgen/llama-server) and "
                      "answers a full disk left unwritten (synthgen/recovery)",
    "SYNTHGEN_GPUS": "GPU ids the vLLM launcher may use (default: CUDA_VISIBLE_DEVICES)",
    "XDG_RUNTIME_DIR": "where a run's live-read socket lives (default: the temp dir)",
    "RAY_ADDRESS": "the Ray cluster --ray joins when given no address (default: the one `ray start` "
                   "made here)",
    "NO_COLOR": "no colour in the output",
}


class Spec:
    """The help of one command: option groups (title, option names), examples (what, command),
    environment variables, and notes on options that are required only in some cases."""

    def __init__(self, examples: list[tuple[str, str]], groups: list[tuple[str, list[str]]] | None = None,
                 env: list[str] | None = None, marks: dict[str, str] | None = None,
                 defaults: dict[str, str] | None = None, short: str | None = None):
        self.short = short  # the line in `synthgen --help` where the docstring's first sentence fails
        self.examples = examples
        self.groups = groups or []
        self.env = env or []
        self.marks = marks or {}
        self.defaults = defaults or {}


def _generate_defaults() -> dict[str, str]:
    """generate's flags default to None (a config file may set them); the defaults that
    apply are GenerateConfig's, shown from there so they cannot drift."""
    from ..config import GenerateConfig

    names = {"input_path": "input", "base_urls": "base_urls"}
    out = {}
    for param in ("concurrency", "timeout", "max_attempts", "rate_limit_wait", "n", "api_key_env",
                  "prompts_dir", "temperature", "top_p", "max_tokens"):
        field = GenerateConfig.model_fields[names.get(param, param)]
        if field.default is not None:
            out[param] = str(field.default)
    out["api"] = str(GenerateConfig.model_fields["api"].default)
    out["api_key_env"] = "OPENAI_API_KEY"  # the default API's own variable (each API has one)
    return out


GENERATE = Spec(
    examples=[
        ("The bundled local teacher (no key, no GPU; started and stopped for the run):",
         "synthgen generate --input prompts.jsonl --db corpus.duckdb"),
        ("OpenAI, under its quotas, with the cost:",
         "export OPENAI_API_KEY=...\n"
         "synthgen generate --input prompts.jsonl --db corpus.duckdb \\\n"
         "    --model gpt-4o-mini --base-url https://api.openai.com/v1 \\\n"
         "    --rpm 500 --tpm 200000"),
        ("What it would cost, before sending (a pilot of 20 answers measures their length):",
         "synthgen generate --input prompts.jsonl --db corpus.duckdb \\\n"
         "    --model gpt-4o-mini --base-url https://api.openai.com/v1 --dry-run --pilot 20"),
        ("Two vLLM replicas, 2 samples per prompt with top-5 logprobs, concurrency found by measurement:",
         "synthgen generate --input prompts.jsonl --db corpus.duckdb \\\n"
         "    --model Qwen/Qwen2.5-7B-Instruct \\\n"
         "    --base-url http://gpu1:8000/v1 --base-url http://gpu2:8000/v1 \\\n"
         "    --n 2 --logprobs 5 --concurrency auto"),
        ("Run the same command again to resume; follow it from another terminal with:",
         "synthgen status --db corpus.duckdb --watch"),
        ("A Ray fleet (synthgen teacher start --ray), fed by 4 client processes on the cluster:",
         "synthgen generate --input prompts.jsonl --db corpus.duckdb --teacher fleet \\\n"
         "    --ray --shards 4 --shard-dir /shared/synthgen"),
    ],
    groups=[
        ("Input", ["config_file", "input_path", "input_sql", "template", "prompts_dir", "limit",
                   "skip_invalid"]),
        ("Store", ["db", "retry_failed"]),
        ("Teacher", ["model", "base_urls", "api", "teacher_name", "teacher_state_dir", "api_key_env",
                     "cache_prompt", "skip_preflight", "threads", "logprobs_mode", "think_tags"]),
        ("Sampling (a change makes new requests)", ["n", "temperature", "top_p", "max_tokens", "seed",
                                                    "stop", "logprobs", "extra_body", "response_schema"]),
        ("Limits and retries", ["concurrency", "timeout", "max_attempts", "rate_limit_wait", "length_retries",
                                "rpm", "tpm"]),
        ("Batch API (half the price, answers within 24 h)",
         ["batch", "batch_discount", "batch_poll_interval", "batch_poll_max", "batch_max_requests",
          "batch_max_bytes"]),
        ("Cost (default: the price table's list prices for --model, dated) and output",
         ["dry_run", "pilot", "price_in", "price_out", "price_cached_in", "price_cache_write", "budget",
          "spend_per_window", "progress_interval", "verbose"]),
        ("On a Ray cluster (the [ray] extra; see docs/scale.md)", ["ray_address", "shards", "shard_dir",
                                                                   "keep_shards"]),
    ],
    env=["OPENAI_API_KEY", "SYNTHGEN_LLAMA_SERVER", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "RAY_ADDRESS"],
    marks={"db": "required (here or in --config)", "input_path": "this or --input-sql is required",
           "input_sql": "this or --input is required", "model": "required with --base-url"},
)

STORE = "(it works during a run too: the run answers reads itself)"

SPECS: dict[str, Spec] = {
    "generate": GENERATE,
    "status": Spec([("Every run of a store:", "synthgen status --db corpus.duckdb"),
                    ("Follow the run writing it, live:", "synthgen status --db corpus.duckdb --watch"),
                    ("As JSON, one object per run:", "synthgen status --db corpus.duckdb --json")],
                   env=["XDG_RUNTIME_DIR"]),
    "sql": Spec([("Finish reasons " + STORE + ":",
                  "synthgen sql --db corpus.duckdb \\\n"
                  "    \"SELECT finish_reason, count(*) FROM corpus GROUP BY 1\""),
                 ("Failures as CSV:", "synthgen sql --db corpus.duckdb --format csv \"FROM failures\"")],
                short="Run read-only SQL on the store (a table, CSV or JSONL)."),
    "export": Spec([("The latest plan's answers, for TRL or datasets:",
                     "synthgen export --db corpus.duckdb --out train.jsonl"),
                    ("Only finished answers, as Parquet:",
                     "synthgen export --db corpus.duckdb --out train.parquet \\\n"
                     "    --where \"finish_reason = 'stop'\""),
                    ("Prompt and completion apart (TRL then trains only the answer); DPO pairs:",
                     "synthgen export --db corpus.duckdb --out sft.jsonl --format prompt-completion\n"
                     "synthgen export --db pref.duckdb --out dpo.jsonl --format preference"),
                    ("R1-style: the reasoning inside the answer as <think>...</think>, checked against "
                     "the student's template:",
                     "synthgen export --db r1.duckdb --out r1.jsonl --format prompt-completion \\\n"
                     "    --think-in-content --tokenizer teacher")]),
    "converse": Spec([("Three-turn conversations on the bundled teacher, for TRL:",
                       "synthgen converse --input seeds.jsonl --db chat.duckdb --turns 3 --out chat.jsonl"),
                      ("A strong teacher against a cheap user simulator with its own persona:",
                       "synthgen converse --input seeds.jsonl --db chat.duckdb --out chat.jsonl \\\n"
                       "    --model gpt-4o --base-url https://api.openai.com/v1 \\\n"
                       "    --user-model gpt-4o-mini --persona student.txt")],
                     env=["OPENAI_API_KEY"]),
    "episodes": Spec([("The teacher with a sandboxed Python tool, for TRL:",
                       "synthgen episodes --input tasks.jsonl --db tools.duckdb --out episodes.jsonl"),
                      ("Your own tools' schemas (the Python API runs them: synthgen.episodes.episodes):",
                       "synthgen episodes --input tasks.jsonl --db tools.duckdb --tools tools.json \\\n"
                       "    --model gpt-4o --base-url https://api.openai.com/v1 --max-steps 6")],
                     env=["OPENAI_API_KEY"]),
    "run": Spec([("Self-Instruct on the bundled teacher, offline (seeds -> instructions -> answers):",
                  "synthgen run self-instruct --db si.duckdb"),
                 ("A built-in recipe against any teacher, with its settings changed:",
                  "synthgen run self-instruct --db si.duckdb --set prompts=200 --set samples=4 \\\n"
                  "    --set answers.max_tokens=512 --model gpt-4o-mini --base-url https://api.openai.com/v1"),
                 ("Your own recipe, then the funnel of its stages:",
                  "synthgen run prompts/mine.yaml --db c.duckdb\nsynthgen status --db c.duckdb")],
                env=["OPENAI_API_KEY", "SYNTHGEN_LLAMA_SERVER"]),
    "merge": Spec([("Fold shard stores into the main store (running it again changes nothing):",
                    "synthgen merge --db corpus.duckdb corpus.shard-1-of-2.duckdb "
                    "corpus.shard-2-of-2.duckdb")]),
    "report": Spec([("One HTML file with every plot (open it offline):",
                     "synthgen report --db corpus.duckdb --out report.html")]),
    "view": Spec([("Browse the corpus at the URL it prints (Ctrl-C stops it):",
                   "synthgen view --db corpus.duckdb"),
                  ("On a fixed port:", "synthgen view --db corpus.duckdb --port 8765")]),
    "batch": Spec([("Send a corpus through OpenAI's Batch API, then resume or follow it:",
                    "synthgen generate --batch --input p.jsonl --db c.duckdb --model gpt-4o-mini \\\n"
                    "    --base-url https://api.openai.com/v1\nsynthgen batch status --db c.duckdb"),
                   ("Files for `vllm run-batch` on a GPU box, and its answers back in:",
                    "synthgen batch write --input p.jsonl --db c.duckdb --model M --out batches/\n"
                    "synthgen batch ingest --db c.duckdb batches/out-*.jsonl")],
                  env=["OPENAI_API_KEY"]),
    "batch status": Spec([("Every batch of a store, and what it cost:",
                           "synthgen batch status --db c.duckdb")]),
    "batch cancel": Spec([("Cancel the batches in flight (what they answered is kept):",
                           "synthgen batch cancel --db c.duckdb")], env=["OPENAI_API_KEY"]),
    "batch write": Spec([("Pending requests as batch files:",
                          "synthgen batch write --input p.jsonl --db c.duckdb --model M --out batches/")]),
    "batch ingest": Spec([("Store a batch output file made elsewhere (exactly once):",
                           "synthgen batch ingest --db c.duckdb batches/out-1.jsonl")]),
    "demo": Spec([("The whole loop offline, on the bundled teacher:", "synthgen demo --db demo.duckdb"),
                  ("A corpus to distil from: every seed, three answers each, top-20 logprobs:",
                   "synthgen demo --limit 345 --samples 3 --logprobs 20 --db demo345x3.duckdb")],
                 env=["SYNTHGEN_LLAMA_SERVER", "XDG_CACHE_HOME"]),
    "teacher": Spec([("Start the bundled CPU teacher in the background, use it, stop it:",
                      "synthgen teacher start\nsynthgen generate --input p.jsonl --db c.duckdb "
                      "--base-url http://127.0.0.1:PORT/v1 --model MODEL\nsynthgen teacher stop"),
                     ("Two vLLM replicas, one per GPU:",
                      "synthgen teacher start --backend vllm --model Qwen/Qwen2.5-7B-Instruct --replicas 2")],
                    env=["SYNTHGEN_LLAMA_SERVER", "XDG_CACHE_HOME", "SYNTHGEN_GPUS"]),
    "teacher start": Spec([("The bundled CPU teacher:", "synthgen teacher start"),
                           ("vLLM, with an argument for vllm serve:",
                            "synthgen teacher start --backend vllm --model Qwen/Qwen2.5-7B-Instruct \\\n"
                            "    -- --dtype half"),
                           ("8 vLLM replicas as Ray actors, one GPU each, wherever the cluster has them:",
                            "synthgen teacher start --backend vllm --model Qwen/Qwen2.5-7B-Instruct \\\n"
                            "    --ray --replicas 8 --gpus-per-replica 1")],
                          env=["SYNTHGEN_LLAMA_SERVER", "SYNTHGEN_GPUS", "RAY_ADDRESS"]),
    "teacher stop": Spec([("Stop the default teacher:", "synthgen teacher stop")]),
    "teacher status": Spec([("Is it up, and where:", "synthgen teacher status")]),
    "teacher build": Spec([("Build llama-server for this machine once (cached):", "synthgen teacher build")],
                          env=["XDG_CACHE_HOME", "SYNTHGEN_LLAMA_SERVER"]),
    "train": Spec([("SFT and SFT+KD on the demo corpus, then the eval table:",
                    "synthgen train --db demo.duckdb --out runs/demo --compare-kd --max-steps 200"),
                   ("LoRA on the rows a query picks:",
                    "synthgen train --db corpus.duckdb --out runs/lora --lora "
                    "--query \"SELECT * FROM corpus WHERE finish_reason = 'stop'\"")],
                  env=["SYNTHGEN_CACHE"]),
    "eval": Spec([("Held-out metrics of a trained student (recorded in evals):",
                   "synthgen eval --db demo.duckdb --model runs/demo/kd"),
                  ("A served GGUF scored on the same held-out rows through its logprobs:",
                   "synthgen eval --db demo.duckdb --model runs/demo/kd --served http://127.0.0.1:PORT/v1")],
                 env=["SYNTHGEN_CACHE"]),
    "student": Spec([("Ship a student: one GGUF file, checked served, then serve it:",
                      "synthgen student export --model runs/distill/kd --out student.gguf --quant q4_k_m\n"
                      "synthgen teacher start --model student.gguf --name student")],
                    env=["XDG_CACHE_HOME"]),
    "student export": Spec([("Q8_0, checked on the student's held-out prompts:",
                             "synthgen student export --model runs/distill/kd --out student.gguf "
                             "--db demo345.duckdb"),
                            ("Q4_K_M (llama-quantize is compiled once per machine, 4-8 min on 2 cores):",
                             "synthgen student export --model runs/distill/kd --out student-q4.gguf "
                             "--quant q4_k_m"),
                            ("The bundled teacher at the same quantization, for compare:",
                             "synthgen student export --model teacher --out teacher-q4.gguf --quant q4_k_m")],
                           env=["XDG_CACHE_HOME", "SYNTHGEN_LLAMA_SERVER"]),
    "student sample": Spec([("Two answers per prompt from a trained student, stored as student:NAME@HASH:",
                             "synthgen student sample --model runs/distill/kd --db demo.duckdb \\\n"
                             "    --input prompts.jsonl --n 2 --max-tokens 128"),
                            ("Greedy answers to the prompts already in the store:",
                             "synthgen student sample --model runs/distill/kd --db demo.duckdb \\\n"
                             "    --input-sql \"SELECT DISTINCT messages FROM corpus\" --temperature 0")]),
    "score": Spec([("The bundled teacher scores every stored answer, in this process (top-20):",
                    "synthgen score --db demo.duckdb --teacher local"),
                   ("A vLLM teacher scores the student's answers (its prompt_logprobs):",
                    "synthgen score --db demo.duckdb --teacher http://127.0.0.1:8000/v1 \\\n"
                    "    --where \"model LIKE 'student:%'\""),
                   ("What the scores say, per answer:",
                    "synthgen sql --db demo.duckdb \"SELECT request_id, teacher, tokens, nll FROM scored\"")],
                  env=["OPENAI_API_KEY", "SYNTHGEN_CACHE"]),
    "distill": Spec([("On-policy distillation of a 20-layer student of the bundled teacher, 4 rounds:",
                      "synthgen distill --db demo345x3.duckdb --out runs/opd --student prune:20 \\\n"
                      "    --teacher local --rounds 4 \\\n"
                      "    --prompts \"SELECT * FROM corpus WHERE finish_reason = 'stop'\""),
                     ("KD then OPD: warm-start from an off-policy KD student, score with a vLLM teacher:",
                      "synthgen distill --db demo345x3.duckdb --out runs/kd-opd \\\n"
                      "    --student runs/distill/kd \\\n"
                      "    --teacher http://127.0.0.1:8000/v1 --rounds 2 \\\n"
                      "    --prompts \"SELECT * FROM corpus WHERE finish_reason = 'stop'\""),
                     ("Then measure the last round like any student:",
                      "synthgen eval --db demo345x3.duckdb --model runs/opd/round-4")],
                    env=["SYNTHGEN_CACHE"]),
    "compare": Spec([("A served teacher against a served student on the same held-out prompts:",
                      "synthgen teacher start --model teacher-q4.gguf --name teacher\n"
                      "synthgen teacher start --model student.gguf --name student\n"
                      "synthgen compare --teacher http://127.0.0.1:PORT1/v1 --student "
                      "http://127.0.0.1:PORT2/v1 \\\n    --db demo345.duckdb --split runs/distill/kd")]),
}

TOP = Spec(
    examples=[("The whole loop offline (bundled teacher, then a student):",
               "synthgen demo --db demo.duckdb\n"
               "synthgen train --db demo.duckdb --out runs/demo --compare-kd"),
              ("Any OpenAI-compatible teacher, then look at what it made:",
               "synthgen generate --input prompts.jsonl --db corpus.duckdb --model M --base-url URL\n"
               "synthgen report --db corpus.duckdb && synthgen view --db corpus.duckdb")],
    env=list(ENV),
)


def decorate(command: click.Command, name: str) -> click.Command:
    """Give `command` (and its subcommands) the help of SPECS[name]; idempotent."""
    spec = SPECS.get(name)
    if spec is not None and not getattr(command, "_synthgen_help", False):
        if name == "generate" and not spec.defaults:
            spec.defaults = _generate_defaults()
        if spec.short:
            command.short_help = spec.short
        command.format_options = MethodType(_options_formatter(spec), command)
        command.format_epilog = MethodType(_epilog_formatter(spec), command)
        command._synthgen_help = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            decorate(sub, f"{name} {sub_name}")
    return command


def _record(param: click.Parameter, ctx: click.Context, spec: Spec) -> tuple[str, str] | None:
    record = param.get_help_record(ctx)
    if record is None:
        return None
    opts, text = record
    extra = []
    if param.name in spec.marks:
        extra.append(spec.marks[param.name])
    if getattr(param, "count", False):
        text = text.replace("  [default: 0]", "")  # -v, -vv: a count has no default to tell
    if param.name in spec.defaults and "default:" not in text:
        extra.append(f"default: {spec.defaults[param.name]}")
    if extra:
        text = f"{text}  [{'; '.join(extra)}]".strip()
    return opts, text


def _options_formatter(spec: Spec):
    def format_options(self: click.Command, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        params = {p.name: p for p in self.get_params(ctx) if isinstance(p, click.Option)}
        placed: set[str] = set()
        for title, names in spec.groups:
            rows = [r for n in names if n in params and (r := _record(params[n], ctx, spec))]
            placed.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [r for n, p in params.items() if n not in placed and (r := _record(p, ctx, spec))]
        if rest:
            with formatter.section("Other options" if spec.groups else "Options"):
                formatter.write_dl(rest)
        if isinstance(self, click.Group):
            self.format_commands(ctx, formatter)

    return format_options


def _epilog_formatter(spec: Spec):
    def format_epilog(self: click.Command, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.epilog:
            formatter.write_paragraph()
            formatter.write_text(self.epilog)
        if spec.examples:
            with formatter.section("Examples"):
                for what, command in spec.examples:
                    formatter.write_text(what)
                    with formatter.indentation():
                        for line in command.splitlines():
                            formatter.write(" " * formatter.current_indent + line + "\n")
        if spec.env:
            with formatter.section("Environment"):
                formatter.write_dl([(var, ENV[var]) for var in spec.env])

    return format_epilog


def top_level(group: click.Group) -> None:
    """The `synthgen --help` page: commands, then examples and every environment variable."""
    group.format_epilog = MethodType(_epilog_formatter(TOP), group)
