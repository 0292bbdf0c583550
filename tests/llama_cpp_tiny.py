"""Test support: llama.cpp's converter for the tiny models, whose tokenizers are trained locally.

llama.cpp recognises a BPE tokenizer's pre-tokenizer by hashing how it splits a fixed text, which only published
tokenizers pass; dispatchtune runs the converter as llama.cpp ships it, so a tiny model's export would stop there.
The tiny tokenizers split with GPT-2's rule or Qwen's, which llama.cpp implements as its `gpt-2`, `qwen2` and
`qwen35` pre-tokenizers. So this builds a llama.cpp tree for `LLAMA_CPP_DIR` (the product's own way to use another
llama.cpp) whose `convert_hf_to_gguf.py` maps exactly those split rules to those names when, and only when, the real
converter does not recognise the tokenizer, then runs the real converter. The export's tokenizer parity check proves
the mapping on every file.

    export LLAMA_CPP_DIR=$(python tests/llama_cpp_tiny.py DIR)    # what scripts/demo.sh does for the tiny model
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from dispatchtune.families import llama_cpp_splits

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# with the Split regexes of the families whose llama.cpp pre-tokenizers were written from them (the registry's)
KNOWN_SPLITS = {GPT2_SPLIT: "gpt-2", **llama_cpp_splits()}
SHIM = """# Made by {support}: llama.cpp's converter with the tiny test tokenizers' pre-tokenizers known.
import sys

sys.path.insert(0, {folder!r})
from llama_cpp_tiny import converter_main


def main():
    converter_main({real!r})
"""


def pretokenizer_for(tokenizer_json: dict) -> str | None:
    """The llama.cpp pre-tokenizer that splits text exactly as this tokenizer.json does, or None if none is known."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        pattern = steps[0].get("pattern", {}).get("Regex")
        if not steps[1].get("use_regex", True) and steps[0].get("behavior") == "Isolated":
            return KNOWN_SPLITS.get(pattern)
    return None


def tree(dest: Path, real: Path | None = None) -> Path:
    """A llama.cpp tree at `dest`: the shim converter, and links to the real tree's model classes and gguf-py."""
    if real is None:
        from dispatchtune.export.llama_cpp_tools import converter_dir

        real = converter_dir()
    if (Path(real) / "convert_hf_to_gguf.py").read_text(encoding="utf-8").startswith("# Made by"):
        raise SystemExit(f"{real} is such a tree itself; point LLAMA_CPP_DIR at llama.cpp, or unset it")
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("conversion", "gguf-py"):
        link = dest / part
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(real).resolve() / part, target_is_directory=True)
    here = Path(__file__).resolve()
    (dest / "convert_hf_to_gguf.py").write_text(
        SHIM.format(support=f"tests/{here.name}", folder=str(here.parent), real=str(Path(real).resolve())))
    return dest


def converter_main(real: str) -> None:
    """The real convert_hf_to_gguf.main(), its pre-tokenizer recognition falling back to `pretokenizer_for`."""
    spec = importlib.util.spec_from_file_location("convert_hf_to_gguf_real", Path(real) / "convert_hf_to_gguf.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    from conversion.base import TextModel

    recognise = TextModel.get_vocab_base_pre

    def with_fallback(self, tokenizer):
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            path = Path(self.dir_model) / "tokenizer.json"
            name = pretokenizer_for(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None
            if name is None:
                raise
            print(f"pre-tokenizer not recognised; a locally trained tokenizer splitting as {name!r}", file=sys.stderr)
            return name

    TextModel.get_vocab_base_pre = with_fallback
    converter.main()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dispatchtune
    print(tree(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache/dispatchtune/llama.cpp-tiny"))
