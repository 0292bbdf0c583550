"""Shared test fixtures: tiny models built once per session, and the sample data beside the repository."""

from pathlib import Path

import pytest

from dispatchtune.errors import UserError
from dispatchtune.tiny_models import build_tiny_model, cached_tiny_model

# Real sample data (ToolBench, format examples) lives beside the repository, not in it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """`tiny_models(family) -> Path`: that family's tiny model, built on first request and reused after."""
    root = tmp_path_factory.mktemp("tiny_models")
    return lambda family: build_tiny_model(family, root / family)


@pytest.fixture(scope="session")
def real_tiny_models():
    """`real_tiny_models(family) -> Path`: that family's tiny model with its real vocabulary (`tiny:<family>:real`).
    Each holds a 50-150 MB embedding and the first conversion of a vocabulary takes half a minute, so they are built
    once into the tiny-model cache, as recipes build them, and reused by later sessions. The asking test skips where
    llama.cpp's vocabularies are not set up (scripts/install_export_tools.sh)."""
    from dispatchtune.export.llama_cpp_tools import models_dir

    def build(family: str) -> Path:
        try:
            models_dir()
        except UserError as e:
            pytest.skip(str(e))
        return cached_tiny_model(f"{family}:real")

    return build


@pytest.fixture(scope="session")
def user_folder(tmp_path_factory) -> Path:
    """A working directory as ML users keep them: their own train.py, eval.py, export.py and data_prep.py, each of
    which fails loudly if anything imports it instead of dispatchtune's stage of that name."""
    folder = tmp_path_factory.mktemp("user_folder")
    for name in ("train", "eval", "export", "data_prep"):
        (folder / f"{name}.py").write_text(f"raise SystemExit(\"the user's own {name}.py was imported\")\n")
    return folder
