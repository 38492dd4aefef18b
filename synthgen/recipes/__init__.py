"""Recipes: from a handful of seeds to a judged, filtered, deduplicated corpus.

    spec       a recipe file (YAML) -> Recipe and its Stages, checked (file:line errors)
    yamlmap    YAML that remembers the line of each key
    paths      files a recipe names (from here, else from the recipe's folder)
    keep       a stage's `keep`: SQL conditions and built-in filters, in order
    filters/   the built-in filters (self-instruct, evol-instruct, dedup, verify, pairs)
    runner     run_recipe(): each stage a generate() over its input, then its keep
    prompts/   the built-in recipes (links to the checkout's prompts/*.yaml)

A stage is a use of the engine, not a second engine: it is a plan like any generate's, its
rows are stored once by the same content-hashed ids, and its view (store/stages.py) is a
query over `corpus`. Nothing here speaks HTTP.
"""

from .runner import RecipeSummary, StageResult, run_recipe
from .spec import Recipe, Stage, find_recipe, load_recipe

__all__ = ["Recipe", "RecipeSummary", "Stage", "StageResult", "find_recipe", "load_recipe", "run_recipe"]
