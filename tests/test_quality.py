import numpy as np
import pytest
import torch
from torch import nn

from egbas_fast import quality


class CodeGenerator(nn.Module):
    """'Draws' digit k as an image whose every pixel is k / 10: class and confidence are known exactly."""
    egbas_config = {"latent_dim": 2}

    def forward(self, z):
        k = (z[:, 0] > 0).long() * 3 + (z[:, 1] > 1).long()  # classes 0, 1, 3, 4
        return (k.float() / 10).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)


class ReadCode(nn.Module):
    """Logits: +sharp at the encoded class; confidence is high unless the class is 4, where two logits tie."""
    egbas_config = {"n_classes": 10}

    def forward(self, x):
        k = torch.round(x[:, 0, 0, 0] * 10).long()
        logits = torch.zeros(len(x), 10)
        logits[torch.arange(len(x)), k] = 20.0
        logits[k == 4, 5] = 20.0  # class 4 ties with 5: softmax 0.5, argmax 4 (first)
        return logits


def test_judge_counts_classes_and_confidence_like_numpy():
    result = quality.judge(CodeGenerator(), ReadCode(), n=500, seed=7, batch=64)
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(7)).numpy()
    k = (z[:, 0] > 0) * 3 + (z[:, 1] > 1)
    assert result["histogram"] == np.bincount(k, minlength=10).tolist()
    assert result["confident_histogram"] == np.bincount(k[k != 4], minlength=10).tolist()
    assert result["confident"] == pytest.approx(np.mean(k != 4), abs=1e-4)
    assert result["classes_present"] == len(set(k[k != 4].tolist()))
    assert result == quality.judge(CodeGenerator(), ReadCode(), n=500, seed=7, batch=500)  # batching-independent


def test_judge_refuses_non_positive_sizes():
    with pytest.raises(ValueError, match="positive"):
        quality.judge(CodeGenerator(), ReadCode(), n=0)


def test_main_checks_its_arguments_before_training_the_judge(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(quality, "train_judge", lambda *a, **k: pytest.fail("the judge trained before the checks"))
    assert quality.main([str(tmp_path / "no-such-run"), "--judge", str(tmp_path / "judge")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality.main([str(tmp_path), "--n", "0"])
    assert "must be a positive integer" in capsys.readouterr().err
