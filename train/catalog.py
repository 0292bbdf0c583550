"""The recipes shipped with dispatchtune, found by name: `--recipe qwen3-0.6b` as well as `--recipe path/to/r.yaml`.

They sit in the repository's `recipes/` folder, which the package reaches as `dispatchtune/recipes` (and the wheel
ships), so a pip-installed dispatchtune has them too. `dispatchtune recipes` lists them with the line that says
what each is for; copy one to start your own.
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

from dispatchtune.errors import UserError


def folder() -> Path:
    return Path(str(files("dispatchtune") / "recipes"))


def shipped() -> dict[str, Path]:
    """Name -> file of every shipped recipe (the accelerate configs and sweeps beside them are not recipes)."""
    return {p.stem: p for p in sorted(folder().glob("*.yaml"))}


def resolve(recipe: str | Path) -> Path:
    """A recipe file: `recipe` itself where that file exists, else the shipped recipe of that name."""
    path = Path(recipe)
    if path.is_file():
        return path
    recipes = shipped()
    if str(recipe) in recipes:
        return recipes[str(recipe)]
    what = "file" if path.suffix in (".yaml", ".yml") or len(path.parts) > 1 else "name"
    raise UserError(f"recipe {what} {recipe} not found; pass a YAML path or a shipped recipe: {', '.join(recipes)}")


def add_recipe_argument(parser: argparse.ArgumentParser, help_: str = "the recipe") -> None:
    parser.add_argument("--recipe", required=True,
                        help=f"{help_}: a YAML file, or a shipped recipe by name ({', '.join(shipped())}; "
                             "`dispatchtune recipes` describes them)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    for name, path in shipped().items():
        print(f"{name:14} {_summary(path)}")
    print(f"(in {folder()}: `--recipe NAME` trains with one; copy it and pass the copy's path to change it)")
    return 0


def _summary(path: Path, width: int = 100) -> str:
    """The first sentence of the recipe's leading comment, which names the model and says what it is for."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or not line.strip("# "):
            break
        lines.append(line.strip("# "))
    sentence = " ".join(lines).split(". ")[0].removesuffix(".")
    return sentence if len(sentence) <= width else sentence[: width - 3].rsplit(" ", 1)[0] + " ..."
