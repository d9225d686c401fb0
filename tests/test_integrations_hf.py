"""nclab.integrations.hf: a Hugging Face Trainer on a GPT-2 built from a tiny config (vocabulary
1,000, 2 layers, random weights, no download) over synthetic token sequences with padding.  The
callback's metrics equal the independent float64 reference on the shifted, unpadded last hidden
states of the final model (1e-10), with K = the vocabulary and the absent tokens reported; they
reach trainer.state.log_history and the on_log of callbacks that run before it (where the
report_to integrations sit).  Also: the one-line install hint when transformers is missing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nclab.metrics import METRIC_NAMES
from reference_nc import reference_metrics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
SRC = Path(__file__).resolve().parents[1] / "src"
VOCAB = 1000


def test_missing_transformers_gives_a_one_line_install_hint():
    code = "import sys; sys.modules['transformers'] = None\nimport nclab.integrations.hf\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == (
        "ImportError: nclab.integrations.hf needs transformers: pip install 'nclab[hf]'"), res.stderr[-2000:]


def _sequences(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 17, (n,), generator=g)
    return [{"input_ids": torch.randint(1, 150, (int(L),), generator=g)} for L in lengths]  # 0 = padding


def _collate(features):
    T = max(f["input_ids"].numel() for f in features)
    ids = torch.zeros(len(features), T, dtype=torch.long)
    mask = torch.zeros(len(features), T, dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : f["input_ids"].numel()] = f["input_ids"]
        mask[i, : f["input_ids"].numel()] = 1
    labels = ids.masked_fill(mask == 0, -100)  # as DataCollatorForLanguageModeling: unshifted, -100 pads
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_trainer_callback_on_a_tiny_gpt2_equals_the_shifted_unpadded_hidden_states(tmp_path, one_thread):
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from nclab.integrations.hf import NeuralCollapseCallback

    class Recorder(TrainerCallback):  # runs before ours, like the report_to integrations
        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, n_positions=32)
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, num_train_epochs=2,
                             per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=1e-3,
                             save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                             eval_strategy="epoch", seed=0)
    recorder = Recorder()
    data = _sequences()
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, data_collator=_collate,
                      callbacks=[recorder])
    cb = NeuralCollapseCallback.attach(trainer, every_n_epochs=1, nc4=True)
    at_eval = NeuralCollapseCallback.attach(trainer, every_n_epochs=None, at_evaluate=True, loader="eval", nc4=True)
    trainer.train()
    assert all(not m._forward_pre_hooks for m in model.modules())

    # oracle: the final model on the same batches; features = last hidden state (input of lm_head)
    model.eval()
    feats, labels = [], []
    with torch.no_grad():
        for batch in trainer.get_test_dataloader(trainer.train_dataset):
            out = model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            h = out.last_hidden_state
            lab = batch["labels"][:, 1:]
            keep = lab != -100
            feats.append(h[:, :-1][keep])
            labels.append(lab[keep])
    feats, labels = torch.cat(feats).double().numpy(), torch.cat(labels).numpy()
    W = model.lm_head.weight.detach().double().numpy()  # tied to the input embeddings; no bias
    want = reference_metrics(feats, labels, VOCAB, W)

    res = cb.metrics
    present = len(set(labels.tolist()))
    assert res.num_samples == labels.size and res.dim == 32
    assert res.num_classes == present and res.num_classes + len(res.empty_classes) == VOCAB  # K = vocab
    for name in METRIC_NAMES:
        assert math.isclose(getattr(res, name), want[name], rel_tol=1e-10, abs_tol=1e-13), name

    logged = [r for r in trainer.state.log_history if "nc/nc1" in r]
    assert [round(r["epoch"]) for r in logged] == [1, 2]
    seen = [r for r in recorder.logs if "nc/nc1" in r]
    assert len(seen) == 2
    for name in METRIC_NAMES:
        assert logged[-1][f"nc/{name}"] == seen[-1][f"nc/{name}"] == getattr(res, name)
    # after each evaluation, on the evaluation set (here the same sequences, the same weights)
    evals = [r for r in trainer.state.log_history if "eval_nc/nc1" in r]
    assert len(evals) == 2 and at_eval.metrics == res
    for name in METRIC_NAMES:
        assert evals[-1][f"eval_nc/{name}"] == getattr(res, name)


def test_the_callback_needs_its_trainer_and_valid_arguments():
    from nclab.integrations.hf import NeuralCollapseCallback

    with pytest.raises(ValueError, match="attach"):
        NeuralCollapseCallback().on_train_begin(None, None, None)
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        NeuralCollapseCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="loader must be 'train', 'eval' or a DataLoader"):
        NeuralCollapseCallback(loader="val")
    with pytest.raises(ValueError, match="transformers.Trainer"):
        NeuralCollapseCallback(trainer=object())


def test_doctests():
    import doctest

    import nclab.integrations
    import nclab.integrations.hf

    for mod in (nclab.integrations, nclab.integrations.hf):
        res = doctest.testmod(mod)
        assert res.failed == 0, mod.__name__
    assert doctest.testmod(nclab.integrations.hf).attempted > 0
