from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from autocompress.core.errors import AutocompressError, RecipeError
from autocompress.core.recipe import RECOVERY_DEFAULTS, SCHEMA, Recipe


def _base() -> dict:
    """A valid recipe as it would be loaded from YAML (a fresh copy each call)."""
    return {
        "schema": 1,
        "model": {"name": "demo", "fingerprint": "sha256:0123abcd", "input_shape": [3, 32, 32]},
        "budget": ["flops=0.3", "latency=4ms@cpu"],
        "layers": {
            "features.0": {"out_channels": 16, "sparsity": 0.5},
            "features.3": {"out_channels": 32},
            "classifier": {"sparsity": 0.0},
        },
        "metrics": {
            "base": {"flops": 1.2e8, "params": 50000, "accuracy": 0.91, "latency_cpu_ms": 3.5},
            "compressed": {"flops": 3.6e7, "params": 21000, "accuracy": 0.1 + 0.2, "latency_cpu_ms": None},
        },
        "search": {"strategy": "bo", "trials": 40, "seed": 7, "best_trial": 31, "best_proxy_accuracy": 0.88},
        "recovery": {"calibration_batches": 20, "finetune_steps": 200, "lr": 1e-5, "temperature": 4.0, "seed": 3},
        "excluded": {"head": "output layer"},
    }


def _recipe() -> Recipe:
    return Recipe(
        model={"name": "demo", "fingerprint": "sha256:0123abcd", "input_shape": [3, 32, 32]},
        budget=["flops=0.3", "size=1.5MB", "latency=0.5@cpu"],
        layers={"features.0": {"out_channels": 16, "sparsity": 0.1 + 0.2}, "features.3": {"out_channels": 7}},
        metrics={
            "base": {"flops": 1.2e8, "params": 50000, "accuracy": 0.1 + 0.7, "latency_cpu_ms": 1e-5},
            "compressed": {"flops": 3.6e7, "params": 21000, "accuracy": 0.1 + 0.2, "latency_cpu_ms": None},
        },
        search={
            "strategy": "bo", "trials": 40, "seed": 7, "best_proxy_accuracy": 1 / 3,
            "history": [{"trial": 0, "score": 0.5}, {"trial": 1, "score": 2.5e-17}], "note": "yes: no # not a comment",
        },
        recovery={"calibration_batches": 20, "finetune_steps": 0, "lr": 1e-3, "temperature": 4.0, "seed": 0},
        excluded={"head": "output layer", "emb.weight": "tied: 'quoted'"},
    )


# --------------------------------------------------------------------------- round trips


def test_yaml_round_trip_is_lossless():
    recipe = _recipe()
    data = yaml.safe_load(recipe.to_yaml())
    again = Recipe.from_dict(data)
    assert again == recipe
    assert again.layers["features.0"]["sparsity"] == 0.1 + 0.2  # exact, not 0.3
    assert again.metrics["compressed"]["accuracy"] == 0.1 + 0.2
    assert again.metrics["base"]["latency_cpu_ms"] == 1e-5
    assert again.search["history"][1]["score"] == 2.5e-17
    assert again.budget == ["flops=0.3", "size=1.5MB", "latency=0.5@cpu"]


def test_to_dict_puts_schema_first_and_holds_every_field():
    data = _recipe().to_dict()
    assert list(data) == ["schema", "model", "budget", "layers", "metrics", "search", "recovery", "excluded"]
    assert data["schema"] == SCHEMA == 1


def test_from_dict_of_a_valid_recipe_keeps_every_field():
    data = _base()
    recipe = Recipe.from_dict(copy.deepcopy(data))
    assert recipe.to_dict() == data


def test_missing_optional_fields_get_defaults():
    recipe = Recipe.from_dict({"schema": 1, "model": {"fingerprint": "f"}, "budget": [], "layers": {}})
    assert recipe.metrics == {}
    assert recipe.search == {}
    assert recipe.excluded == {}
    assert recipe.recovery == RECOVERY_DEFAULTS
    assert recipe.recovery is not RECOVERY_DEFAULTS


def test_partial_recovery_is_merged_over_the_defaults():
    data = _base()
    data["recovery"] = {"finetune_steps": 50}
    recipe = Recipe.from_dict(data)
    assert recipe.recovery == {**RECOVERY_DEFAULTS, "finetune_steps": 50}


def test_save_and_load_through_a_file(tmp_path):
    recipe = _recipe()
    path = tmp_path / "recipe.yaml"
    recipe.save(path)
    assert path.is_file()
    assert yaml.safe_load(path.read_text())["schema"] == 1
    assert Recipe.load(path) == recipe
    assert Recipe.load(str(path)) == recipe
    assert list(tmp_path.iterdir()) == [path]  # no recipe.yaml.tmp left behind


def test_save_replaces_an_existing_recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("old contents that are much longer than a recipe would ever be\n" * 100)
    recipe = _recipe()
    recipe.save(path)
    assert Recipe.load(path) == recipe
    assert not (tmp_path / "recipe.yaml.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


# --------------------------------------------------------------------------- validation


def _set(path, value):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data

    return mutate


def _drop(key):
    def mutate(data):
        del data[key]
        return data

    return mutate


@pytest.mark.parametrize(
    "mutate, needle",
    [
        pytest.param(_set(("schema",), 2), "schema 2", id="schema-2"),
        pytest.param(_set(("schema",), "1"), "schema '1'", id="schema-string"),
        pytest.param(_drop("schema"), "schema None", id="schema-missing"),
        pytest.param(_set(("flavour",), "vanilla"), "unknown field 'flavour'", id="unknown-field"),
        pytest.param(_set((3,), "x"), "unknown field '3'", id="unknown-non-string-field"),
        pytest.param(_drop("layers"), "required field 'layers'", id="no-layers"),
        pytest.param(_drop("model"), "required field 'model'", id="no-model"),
        pytest.param(_drop("budget"), "required field 'budget'", id="no-budget"),
        pytest.param(_set(("model",), {"name": "demo"}), "fingerprint", id="model-no-fingerprint"),
        pytest.param(_set(("model", "fingerprint"), 1234), "fingerprint", id="model-fingerprint-int"),
        pytest.param(_set(("model",), "resnet18"), "fingerprint", id="model-not-mapping"),
        pytest.param(_set(("budget",), "flops=0.3"), "list of budget strings", id="budget-not-list"),
        pytest.param(_set(("budget",), ["flops=0.3", 0.5]), "list of budget strings", id="budget-non-string"),
        pytest.param(_set(("budget",), ["flops=3"]), "'flops=3' is a ratio above 1", id="budget-ratio-above-1"),
        pytest.param(_set(("budget",), ["speed=0.3"]), "unknown metric 'speed'", id="budget-unknown-metric"),
        pytest.param(_set(("budget",), ["flops=0.3", "flops=0.5"]), "flops twice", id="budget-twice"),
        pytest.param(_set(("budget",), ["latency=4ms"]), "no target", id="budget-latency-no-target"),
        pytest.param(_set(("layers",), ["features.0"]), "'layers' must map", id="layers-not-mapping"),
        pytest.param(_set(("layers", "features.0"), 16), "layer 'features.0'", id="layer-not-mapping"),
        pytest.param(_set(("layers", 5), {"sparsity": 0.5}), "layer 5", id="layer-name-not-string"),
        pytest.param(_set(("layers", "features.0", "rank_foo"), 4), "unknown operator 'rank_foo'", id="rank_foo"),
        pytest.param(_set(("layers", "features.0", "out_channels"), 0), "out_channels", id="out-channels-0"),
        pytest.param(_set(("layers", "features.0", "out_channels"), -3), "got -3", id="out-channels-negative"),
        pytest.param(_set(("layers", "features.0", "out_channels"), 16.0), "got 16.0", id="out-channels-float"),
        pytest.param(_set(("layers", "features.0", "out_channels"), True), "got True", id="out-channels-bool"),
        pytest.param(_set(("layers", "features.0", "out_channels"), "16"), "got '16'", id="out-channels-string"),
        pytest.param(_set(("layers", "features.0", "heads"), 0), "heads must be a whole number", id="heads-0"),
        pytest.param(_set(("layers", "features.0", "heads"), 2.5), "got 2.5", id="heads-float"),
        pytest.param(_set(("layers", "features.0", "sparsity"), 1.0), "sparsity must be a number in [0, 1), got 1.0",
                     id="sparsity-1"),
        pytest.param(_set(("layers", "features.0", "sparsity"), -0.1), "got -0.1", id="sparsity-negative"),
        pytest.param(_set(("layers", "features.0", "sparsity"), "0.5"), "got '0.5'", id="sparsity-string"),
        pytest.param(_set(("layers", "features.0", "sparsity"), float("nan")), "got nan", id="sparsity-nan"),
        pytest.param(_set(("layers", "features.0", "sparsity"), False), "got False", id="sparsity-bool"),
        pytest.param(_set(("metrics",), [1, 2]), "'metrics' must be a mapping", id="metrics-not-mapping"),
        pytest.param(_set(("metrics", "best"), {}), "metrics entry 'best'", id="metrics-unknown-side"),
        pytest.param(_set(("metrics", "base"), 0.5), "metrics entry 'base'", id="metrics-side-not-mapping"),
        pytest.param(_set(("metrics", "base", "accuracy"), "high"),
                     "metrics.base.accuracy must be a number, got 'high'",
                     id="metrics-string"),
        pytest.param(_set(("metrics", "compressed", "flops"), [1]), "metrics.compressed.flops", id="metrics-list"),
        pytest.param(_set(("metrics", "base", "flops"), float("inf")), "metrics.base.flops", id="metrics-inf"),
        pytest.param(_set(("metrics", "base", "params"), True), "metrics.base.params", id="metrics-bool"),
        pytest.param(_set(("recovery",), [1]), "'recovery' must be a mapping", id="recovery-not-mapping"),
        pytest.param(_set(("recovery", "momentum"), 0.9), "unknown setting 'momentum'", id="recovery-unknown-key"),
        pytest.param(_set(("recovery", "lr"), -1e-3), "recovery.lr must be a non-negative number, got -0.001",
                     id="recovery-negative"),
        pytest.param(_set(("recovery", "finetune_steps"), "many"), "recovery.finetune_steps", id="recovery-string"),
        pytest.param(_set(("recovery", "seed"), None), "recovery.seed", id="recovery-none"),
        pytest.param(_set(("search",), "bo"), "'search' and 'excluded' must be mappings", id="search-not-mapping"),
        pytest.param(_set(("excluded",), ["head"]), "'search' and 'excluded' must be mappings", id="excluded-list"),
    ],
)
def test_invalid_recipe_raises_recipe_error_naming_the_problem(mutate, needle):
    data = mutate(_base())
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict(data)
    assert needle in str(info.value)
    assert str(info.value).startswith("recipe: ")


@pytest.mark.parametrize("data", [[1, 2], "schema: 1", None, 1, yaml.safe_load("- schema: 1\n- model: {}\n")])
def test_not_a_mapping_is_an_error(data):
    with pytest.raises(RecipeError, match="not a mapping"):
        Recipe.from_dict(data)


def test_source_is_named_in_the_message():
    with pytest.raises(RecipeError, match=r"^my\.yaml: has schema 2"):
        Recipe.from_dict({**_base(), "schema": 2}, source="my.yaml")


def test_recipe_error_is_a_user_error():
    with pytest.raises(AutocompressError):
        Recipe.from_dict([])
    with pytest.raises(ValueError):
        Recipe.from_dict([])


# --------------------------------------------------------------------------- loading files


def test_load_of_a_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope" / "recipe.yaml"
    with pytest.raises(RecipeError, match="cannot read recipe") as info:
        Recipe.load(path)
    assert str(path) in str(info.value)


def test_load_of_a_directory_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match="cannot read recipe"):
        Recipe.load(tmp_path)


@pytest.mark.parametrize(
    "text, line",
    [
        ("schema: 1\nmodel: {fingerprint: x\nbudget: []\n", None),
        ("schema: 1\nlayers:\n  a: [1, 2\n", None),
        ("schema: 1\n  bad indent: 2\n", 2),
        ("schema: 1\nmodel: @x\n", 2),
    ],
)
def test_load_of_invalid_yaml_is_an_error(tmp_path, text, line):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match="is not valid YAML") as info:
        Recipe.load(path)
    assert str(path) in str(info.value)
    if line is not None:
        assert f"at line {line}" in str(info.value)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "", "42\n"])
def test_load_of_yaml_that_is_not_a_mapping_is_an_error(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match="not a mapping") as info:
        Recipe.load(path)
    assert str(path) in str(info.value)


def test_load_names_the_file_in_validation_errors(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**_base(), "schema": 2}))
    with pytest.raises(RecipeError, match="has schema 2") as info:
        Recipe.load(path)
    assert str(info.value).startswith(f"recipe {str(path)!r}: ")


@pytest.mark.parametrize(
    "template",
    [
        '!!python/object/apply:os.system ["echo hacked > {marker}"]\n',
        'schema: 1\nmodel: !!python/object/apply:os.system ["echo hacked > {marker}"]\nbudget: []\nlayers: {{}}\n',
        'schema: 1\nmodel: {{fingerprint: !!python/object/apply:os.system ["echo hacked > {marker}"]}}\n'
        "budget: []\nlayers: {{}}\n",
        "!!python/object/new:subprocess.Popen [[sh, -c, 'echo hacked > {marker}']]\n",
    ],
)
def test_load_never_executes_python_tags(tmp_path, template):
    marker = tmp_path / "hacked"
    path = tmp_path / "recipe.yaml"
    path.write_text(template.format(marker=marker))
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.load(path)
    assert not marker.exists()


def test_load_of_a_binary_file_is_an_error(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"schema: 1\nmodel: \xff\xfe\x00\x81\n")
    with pytest.raises(RecipeError):
        Recipe.load(path)


# --------------------------------------------------------------------------- integers beyond float range


@pytest.mark.parametrize(
    "path",
    [("layers", "features.0", "sparsity"), ("metrics", "base", "flops"), ("recovery", "finetune_steps")],
    ids=["sparsity", "metrics", "recovery"],
)
def test_an_int_too_large_for_a_float_is_a_recipe_error(path):
    data = _set(path, 2**1024)(_base())
    with pytest.raises(RecipeError):
        Recipe.from_dict(data)


def test_load_of_an_int_too_large_for_a_float_is_a_recipe_error(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "schema: 1\nmodel: {fingerprint: x}\nbudget: []\nlayers:\n  conv: {sparsity: 1" + "0" * 400 + "}\n"
    )
    with pytest.raises(RecipeError):
        Recipe.load(path)


# --------------------------------------------------------------------------- properties

_FIELDS = ["schema", "model", "budget", "layers", "metrics", "search", "recovery", "excluded",
           "fingerprint", "out_channels", "sparsity", "rank_foo", "base", "compressed", "lr", "seed"]


_HUGE = st.integers(min_value=2**1023, max_value=2**1100).flatmap(lambda n: st.sampled_from([n, -n]))


def _junk():
    ints = st.one_of(st.integers(min_value=-(2**200), max_value=2**200), _HUGE)
    scalars = st.one_of(
        st.none(), st.booleans(), ints, st.floats(), st.text(max_size=8), st.sampled_from(_FIELDS),
        st.sampled_from(["flops=0.3", "flops=3", "latency=4ms", "size=1.5MB", "params=50k,params=1"]),
    )
    keys = st.one_of(st.sampled_from(_FIELDS), st.text(max_size=6), st.integers(), st.none(), st.booleans())
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
        max_leaves=12,
    )


_PATHS = [
    ("schema",), ("model",), ("model", "fingerprint"), ("model", "name"),
    ("budget",), ("budget", 0), ("budget", 1),
    ("layers",), ("layers", "features.0"), ("layers", "features.0", "out_channels"),
    ("layers", "features.0", "sparsity"), ("layers", "features.3", "rank_foo"), ("layers", "new"),
    ("metrics",), ("metrics", "base"), ("metrics", "base", "flops"), ("metrics", "compressed", "accuracy"),
    ("metrics", "other"),
    ("search",), ("search", "trials"), ("recovery",), ("recovery", "lr"), ("recovery", "seed"),
    ("recovery", "momentum"), ("excluded",), ("excluded", "head"), ("flavour",),
]


@st.composite
def _fuzzed_recipe(draw):
    if draw(st.integers(0, 9)) == 0:  # sometimes not even close to a recipe
        return draw(_junk())
    # ints beyond float range go straight into fields too, not only deep in junk
    values = st.one_of(_junk(), _HUGE)
    data = _base()
    for path in draw(st.lists(st.sampled_from(_PATHS), max_size=4)):
        target = data
        for key in path[:-1]:
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and isinstance(key, int) and key < len(target):
                target = target[key]
            else:
                target = None
                break
        last = path[-1]
        if isinstance(target, dict):
            if draw(st.integers(0, 4)) == 0:
                target.pop(last, None)
            else:
                target[last] = draw(values)
        elif isinstance(target, list) and isinstance(last, int) and last < len(target):
            target[last] = draw(values)
    return data


def _check_contract(data):
    try:
        recipe = Recipe.from_dict(data)
    except RecipeError as exc:
        assert str(exc).startswith("recipe: ")
        return
    assert isinstance(recipe, Recipe)
    assert recipe.schema == SCHEMA
    assert isinstance(recipe.model["fingerprint"], str)
    assert all(isinstance(name, str) for name in recipe.layers)
    assert set(recipe.recovery) == set(RECOVERY_DEFAULTS)


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(_fuzzed_recipe())
@example({"schema": 1, "model": {"fingerprint": "x"}, "budget": [], "layers": {"a": {"sparsity": 2**1024}}})
def test_from_dict_of_fuzzed_data_returns_a_recipe_or_raises_recipe_error(data):
    _check_contract(data)


_names = st.text(min_size=1, max_size=12)
_finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.dictionaries(
        _names,
        st.fixed_dictionaries(
            {},
            optional={
                "out_channels": st.integers(min_value=1, max_value=2**40),
                "sparsity": st.floats(min_value=0, max_value=1, exclude_max=True),
            },
        ),
        max_size=5,
    ),
    metrics=st.dictionaries(
        st.sampled_from(["base", "compressed"]),
        st.dictionaries(_names, st.one_of(st.none(), _finite, st.integers())),
    ),
    excluded=st.dictionaries(_names, st.text(max_size=20), max_size=3),
    search=st.dictionaries(_names, st.one_of(st.none(), st.booleans(), _finite, st.text(max_size=10)), max_size=4),
    fingerprint=st.text(max_size=20),
)
def test_yaml_round_trip_of_any_valid_recipe_is_lossless(layers, metrics, excluded, search, fingerprint):
    recipe = Recipe(
        model={"fingerprint": fingerprint}, budget=["flops=0.3"], layers=layers, metrics=metrics,
        search=search, excluded=excluded,
    )
    assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())) == recipe


@pytest.mark.parametrize("settings,expect", [
    ({"pattern": "5:4", "sparsity": 0.5}, "pattern"),
    ({"pattern": "banana"}, "pattern"),
    ({"rank": 8}, "both rank and decomposition"),
    ({"rank": 0, "decomposition": "svd"}, "rank"),
    ({"rank": 8, "decomposition": "cp"}, "decomposition"),
    ({"rank": 8, "decomposition": "svd", "sparsity": 0.5}, "factorised"),
    ({"bits": 3}, "bits"),
    ({"bits": True}, "bits"),
])
def test_rank_pattern_and_bits_settings_are_validated(settings, expect):
    data = _base()
    data["layers"] = {"conv": settings}
    with pytest.raises(RecipeError, match=expect):
        Recipe.from_dict(data)


def test_rank_pattern_and_bits_settings_round_trip():
    data = _base()
    data["layers"] = {"a": {"out_channels": 8, "sparsity": 0.5, "pattern": "2:4", "bits": 4},
                      "b": {"out_channels": 16, "sparsity": 0.0, "rank": 8, "decomposition": "tucker2"}}
    recipe = Recipe.from_dict(data)
    assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())) == recipe
