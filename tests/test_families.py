"""The family registry states each family's facts once, and they agree with the libraries that act on them."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dispatchtune import families
from dispatchtune.families import FAMILIES, TEMPLATES, template_of

PACKAGE = Path(families.__file__).parent
# Family names as whole words: "qwen3" in "tiny:qwen3" or "qwen3 and", not in "qwen3.5", "qwen3-0.6b" or "opt-in".
NAME = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, FAMILIES)) + r")(?![\w-]|\.\d)", re.I)
FACTS = {f.hub_id for f in FAMILIES.values()} | {f.end_of_turn for f in FAMILIES.values()} | {
    t.source.split(":", 1)[1] for t in TEMPLATES.values()}


def package_files() -> list[Path]:
    """The package's own modules and its stages' (dispatchtune/<stage> are links to the stage folders)."""
    roots = [PACKAGE, *(p for p in PACKAGE.iterdir() if p.is_symlink() and p.is_dir())]
    return sorted({p.resolve() for root in roots for p in root.rglob("*.py")})


def string_literals(path: Path):
    """(line, text) of every string constant in the module except docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_family_name_or_fact_is_spelled_outside_the_registry():
    files = package_files()
    assert {p.parent.name for p in files} >= {"dispatchtune", "train", "eval", "export", "data_prep"}
    found = [
        f"{path.relative_to(PACKAGE.parent.resolve())}:{line}: {text[:60]!r}"
        for path in files if path.name != "families.py"
        for line, text in string_literals(path)
        if NAME.search(text) or any(fact in text for fact in FACTS)
    ]
    assert not found, "family names or facts outside dispatchtune/families.py:\n" + "\n".join(found)


def test_the_scan_sees_names_and_facts():
    assert [m.group(1) for m in NAME.finditer("tiny:qwen3, qwen3.5 and OPT; not qwen3-0.6b or opt-in")] == [
        "qwen3", "qwen3.5", "OPT"]
    literals = [text for path in package_files() if path.name == "families.py" for _, text in string_literals(path)]
    assert any(NAME.search(text) for text in literals) and any(fact in literals for fact in FACTS)


def test_every_template_is_recognised_by_its_own_text():
    texts = {name: t.text() for name, t in TEMPLATES.items()}
    assert len(set(texts.values())) == len(texts)  # no two known templates share a text
    for name, text in texts.items():
        assert template_of(text).name == name
        assert template_of("\n" + text + "\n").name == name  # ends stripped, as tokenizers and GGUF files may
    assert template_of("{{ messages }}") is None and template_of(None) is None


def test_every_family_trains_with_a_template_that_carries_tools():
    for family in FAMILIES.values():
        assert family.training_template.call_format is not None, family.name
        assert (family.tool_template is None) == (family.template is not None
                                                  and family.template.call_format is not None), family.name
    assert families.TOOL_TEMPLATES == ("chatml_tools", "gemma3_tools")


def test_tiny_configs_are_of_the_real_architecture():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    for family in FAMILIES.values():
        config = family.tiny_config(256, 1000)
        assert MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type] == family.architecture, family.name


def test_gguf_support_is_what_llama_cpps_converter_says():
    from dispatchtune.export import llama_cpp_tools

    root = llama_cpp_tools.CACHE_DIR / f"llama.cpp-{llama_cpp_tools.llama_cpp_version()}"
    if not (root / "convert_hf_to_gguf.py").is_file():
        pytest.skip("llama.cpp's converter is not unpacked (bash scripts/install_export_tools.sh)")
    supported = llama_cpp_tools.supported_architectures(root)
    for family in FAMILIES.values():
        assert (family.architecture in supported) == (family.gguf_refused is None), family.name


def test_converter_arguments_by_architecture():
    assert families.gguf_converter_args(["Qwen3_5ForCausalLM"]) == ["--no-mtp"]
    assert families.gguf_converter_args(["LlamaForCausalLM"]) == [] and families.gguf_converter_args([]) == []


def test_eval_parser_is_the_one_the_registry_names():
    from dispatchtune.eval.parse import _has_response_parser
    from dispatchtune.tiny_models import build_tokenizer

    for template in TEMPLATES.values():
        if template.call_format is None:
            continue
        tokenizer = build_tokenizer("qwen3")
        tokenizer.chat_template = template.text()
        assert _has_response_parser(tokenizer) == (template.call_format.parser == "response-schema"), template.name


def test_importing_the_registry_imports_no_heavy_library():
    code = "import sys, dispatchtune.families; print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
