"""Hugging Face models as they are (issue 14): a raw ``BertForSequenceClassification`` with
dict batches is searched, applied and exported with no wrapper, through the Python API and
the CLI (``--model hf:DIR``); the exported program loads with torch alone; a recipe
records no device; a causal LM is scored by perplexity."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import yaml

import autocompress as ac
from autocompress.cli.main import main
from autocompress.compress.export import export_model

FAST = dict(trials=1, strategy="uniform", calibration_batches=1, finetune_steps=1, final_finetune_steps=1,
            progress=False)

DATA_MODULE = textwrap.dedent('''
    import torch

    def batches(n, seed):
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            ids = torch.randint(0, 100, (8, 12), generator=g)
            out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 3})
        return out

    def data():
        return batches(2, 0), batches(1, 1)
''')


def _bert(transformers):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=3)
    return transformers.BertForSequenceClassification(config).eval()


def _batches(n, seed):
    namespace: dict = {}
    exec(DATA_MODULE, namespace)
    return namespace["batches"](n, seed)


def test_a_raw_bert_with_dict_batches_is_searched_applied_and_exported(transformers, tmp_path):
    model = _bert(transformers)
    data = (_batches(2, 0), _batches(1, 1))
    result = ac.search("flops=0.5", model=model, data=data, out=tmp_path, device="cpu", **FAST)
    recipe = result.recipe
    assert recipe.metrics["compressed"]["flops"] <= 0.5 * recipe.metrics["base"]["flops"]
    assert 0.0 <= recipe.metrics["compressed"]["accuracy"] <= 100.0
    assert recipe.model["input_shape"] == {"input_ids": [12], "attention_mask": [12]}
    text = (tmp_path / "recipe.yaml").read_text()
    assert "cpu" not in text.replace("latency_cpu_ms", "") and "device" not in text  # a recipe records no device
    assert "metric" not in yaml.safe_load(text)  # accuracy recipes read as before

    applied, metrics = ac.apply(tmp_path / "recipe.yaml", model=model, data=data, device="cpu", precision="bf16")
    assert metrics["flops"] == recipe.metrics["compressed"]["flops"]
    path = tmp_path / "model.pt2"
    export_model(applied, {k: v[:1] for k, v in data[0][0].items() if k != "labels"}, path)
    code = ("import sys, torch; p = torch.export.load(sys.argv[1]).module(); "
            "ids = torch.randint(0, 100, (5, 12)); out = p(input_ids=ids, attention_mask=torch.ones_like(ids)); "
            "assert out['logits'].shape == (5, 3), out; assert 'transformers' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "ok", done.stderr


def test_hf_dir_is_loaded_from_the_folder_alone_through_the_cli(transformers, tmp_path, monkeypatch, capsys):
    _bert(transformers).save_pretrained(tmp_path / "bert")
    (tmp_path / "bertdata.py").write_text(DATA_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["--model", f"hf:{tmp_path / 'bert'}", "--data", "bertdata:data", "--device", "cpu"]
    assert main(["search", "--budget", "flops=0.5", "--trials", "1", "--strategy", "uniform", "--calibration-batches",
                 "1", "--finetune-steps", "0", "--final-finetune-steps", "0", "--out", "run", "--no-progress",
                 *common]) == 0
    assert "accuracy on the validation split" in capsys.readouterr().out
    assert main(["apply", "run/recipe.yaml", "--out", "run/model.pt2", *common]) == 0
    assert (tmp_path / "run" / "model.pt2").is_file()

    assert main(["search", "--model", f"hf:{tmp_path / 'nothing'}", "--data", "bertdata:data", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a saved Hugging Face model (no config.json there)" in err


class TinyLM(nn.Module):
    """A causal LM returning a dict with ``logits`` [B, T, V]."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.head = nn.Linear(32, 50)

    def forward(self, input_ids):
        h = self.emb(input_ids)
        return {"logits": self.head(h + self.fc2(torch.relu(self.fc1(h))))}


def _lm_batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": (ids := torch.randint(0, 50, (4, 16), generator=g)), "labels": ids.clone()}
            for _ in range(n)]


def test_a_language_model_is_searched_by_perplexity_and_the_recipe_says_so(tmp_path):
    torch.manual_seed(0)
    model = TinyLM().eval()
    data = (_lm_batches(2, 0), _lm_batches(1, 1))
    result = ac.search("flops=0.6", model=model, data=data, out=tmp_path, metric="perplexity", device="cpu", **FAST)
    recipe = result.recipe
    assert recipe.metric == "perplexity" and "accuracy" not in recipe.metrics["base"]
    assert recipe.metrics["base"]["perplexity"] > 1.0
    assert recipe.search["best_proxy_perplexity"] > 1.0  # the value, not the score the engine maximised
    saved = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert saved["metric"] == "perplexity"
    _, metrics = ac.apply(tmp_path / "recipe.yaml", model=model, data=data, device="cpu")
    assert "perplexity" in metrics and "accuracy" not in metrics


def test_an_output_no_metric_reads_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "odd.py").write_text(textwrap.dedent('''
        import torch, torch.nn as nn

        class Out:
            def __init__(self, scores):
                self.scores = scores

        class Odd(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 8)
                self.head = nn.Linear(8, 3)

            def forward(self, x):
                return Out(self.head(torch.relu(self.fc(x))))

        def data():
            g = torch.Generator().manual_seed(0)
            b = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))]
            return b, b

        def score(output, target):
            return float((output.scores.argmax(-1) == target).float().mean())
    '''))
    monkeypatch.chdir(tmp_path)
    args = ["search", "--model", "odd:Odd", "--data", "odd:data", "--trials", "1", "--strategy", "uniform",
            "--finetune-steps", "0", "--final-finetune-steps", "0", "--no-progress", "--device", "cpu"]
    assert main([*args, "--out", "a"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "returns a odd.Out, which is neither a tensor nor carries .logits; give --metric" in err
    assert main([*args, "--out", "b", "--metric", "odd:score", "--budget", "params=0.8"]) == 0
    assert yaml.safe_load((tmp_path / "b" / "recipe.yaml").read_text())["metric"] == "odd:score"
    assert main(["apply", "b/recipe.yaml", "--model", "odd:Odd", "--data", "odd:data", "--device", "cpu"]) == 2
    assert "pass --metric odd:score" in capsys.readouterr().err
    assert main(["apply", "b/recipe.yaml", "--model", "odd:Odd", "--data", "odd:data", "--device", "cpu",
                 "--metric", "odd:score"]) == 0


@pytest.mark.parametrize("option", ["cuda", "cuda:1"])
def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(option, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (["search", "--out", str(tmp_path / "r")], ["apply", "r.yaml"], ["export", "d", "--trial", "0"],
                    ["worker", "--storage", "sqlite:///x.db"]):
        if command[0] == "apply":
            (tmp_path / "r.yaml").write_text("schema: 1\nmodel: {fingerprint: x}\nbudget: []\nlayers: {}\n")
            command = ["apply", str(tmp_path / "r.yaml")]
        assert main([*command, "--device", option]) == 2, command
        err = capsys.readouterr().err.strip()
        assert err == (f"autocompress: error: --device {option} needs a CUDA GPU, and torch sees none on this "
                       "machine; use --device cpu (or auto)"), command
    assert not (tmp_path / "r").exists()
