from pathlib import Path

from dispatchtune.data_prep.split import SplitInfo, assign


def infos():
    out = []
    for q in range(40):
        tools = [f"t{q % 10}", f"t{(q % 10) + 1}"] if q % 3 == 0 else [f"t{q % 10}"]
        out += [SplitInfo(f"query {q}", tools, f"cat{q % 4}", False)] * (1 + q % 2)
    return out


def test_split_is_deterministic_and_seeded():
    s = infos()
    assert assign(s, "query", 0.2, 0).heldout == assign(s, "query", 0.2, 0).heldout
    assert assign(s, "query", 0.2, 0).heldout != assign(s, "query", 0.2, 1).heldout


def test_query_split_keeps_a_query_on_one_side_and_reaches_the_fraction():
    s = infos()
    held = assign(s, "query", 0.2, 0).heldout
    for key in {i.key for i in s}:
        assert len({h for i, h in zip(s, held) if i.key == key}) == 1
    assert 0.2 * len(s) <= sum(held) < 0.2 * len(s) + 2


def test_tool_split_never_shows_a_heldout_tool_in_training():
    s = infos() + [SplitInfo(f"solo {k}", [f"solo{k}"], None, False) for k in range(30)]
    split = assign(s, "tool", 0.3, 0)
    held = split.heldout
    assert sum(held) >= 0.3 * len(s)
    train_tools = {t for i, h in zip(s, held) if not h for t in i.calls}
    held_tools = split.units  # the tools held out; a held-out sample may also call a training tool
    assert all(h == bool(held_tools & set(i.calls)) for i, h in zip(s, held))
    assert held_tools and not (train_tools & held_tools)


def test_category_split_and_prompts_are_held_out():
    s = infos() + [SplitInfo("prompt", ["t3"], "cat1", True)]
    held = assign(s, "category", 1 / 3, 0).heldout  # the prompt's category alone holds out 1/3 of the samples
    for cat in {i.category for i in s}:
        assert len({h for i, h in zip(s, held) if i.category == cat}) == 1
    assert held[-1]
    assert all(h for i, h in zip(s, held) if i.category == "cat1")


def test_a_toolbench_function_counts_as_its_service_in_every_toolbench_shape(shared_data):
    """G1_tool holds out RapidAPI services (ToolBench's tools), not single APIs: answer traces, ToolLLaMA records and
    query prompts all name a function's service in its description, and other formats' functions count as themselves."""
    from dispatchtune.data_prep.readers import read_file
    from dispatchtune.data_prep.split import split_info, tool_units

    tb = shared_data / "toolbench"
    files = [*sorted(tb.glob("answer/G1_answer/*.json")), tb / "toolllama/toolllama_G1_dfs_sample.json",
             tb / "instruction/G1_query.json", Path(__file__).parents[1] / "data/sample/formats/xlam.json"]
    services = set()
    for f in files:
        for item in read_file(f):
            if item.sample is None:
                continue
            units = tool_units(item.sample.tools)
            for name, unit in units.items():
                assert unit == (name.rsplit("_for_", 1)[1] if "_for_" in name else name)
            info = split_info(item.sample, "tool")
            assert set(info.calls) <= set(units.values()) and not set(info.calls) & set(info.offers)
            services |= set(info.calls)
    assert {"seo_api", "transitaires"} <= services
