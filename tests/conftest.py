"""Shared test fixtures: tiny models built once per session, llama.cpp's converter for them, and the sample data
beside the repository."""

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from dispatchtune.errors import UserError
from dispatchtune.export import llama_cpp_tools
from dispatchtune.tiny_models import build_tiny_model, cached_tiny_model
from llama_cpp_tiny import tree

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


@pytest.fixture(scope="session")
def tiny_llama_cpp(tmp_path_factory):
    """From its first use on, LLAMA_CPP_DIR for the session is a llama.cpp tree whose converter knows the tiny
    tokenizers' pre-tokenizers (tests/llama_cpp_tiny.py). Yields (tree, real): the real tree is the installed one,
    which the product runs unpatched; None where llama.cpp's converter is not installed."""
    real = Path(os.environ.get("LLAMA_CPP_DIR") or
                llama_cpp_tools.CACHE_DIR / f"llama.cpp-{llama_cpp_tools.llama_cpp_version()}")
    if not (real / "convert_hf_to_gguf.py").is_file():
        yield None
        return
    with pytest.MonkeyPatch.context() as mp:
        shim = tree(tmp_path_factory.mktemp("llama.cpp-tiny"), real)
        mp.setenv("LLAMA_CPP_DIR", str(shim))
        yield SimpleNamespace(tree=shim, real=real)


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 512 KiB (a tmpfs) for a stage to fill up; skipped where this process cannot mount one
    (it needs root and the right to mount, which containers often lack)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True) \
        if os.geteuid() == 0 else None
    if not done or done.returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)
