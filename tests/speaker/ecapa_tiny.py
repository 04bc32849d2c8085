"""A tiny random-weight ECAPA-TDNN saved as a SpeechBrain ``from_hparams`` folder, in the
layout of speechbrain/spkrec-ecapa-voxceleb (hyperparams.yaml, embedding_model.ckpt,
mean_var_norm_emb.ckpt, classifier.ckpt, label_encoder.txt), for tests."""

from __future__ import annotations

from pathlib import Path

HPARAMS = """\
# Tiny random-weight ECAPA-TDNN in the layout of speechbrain/spkrec-ecapa-voxceleb (tests only)
n_mels: 80
pretrained_path: speechbrain/not-a-real-repo

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    lin_neurons: 24

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 24
    out_neurons: 3

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def write_tiny_ecapa(folder: Path, seed: int = 0) -> Path:
    """Instantiate the modules from the YAML, and save each with SpeechBrain's own savers."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(HPARAMS, encoding="utf-8")
    torch.manual_seed(seed)
    hp = load_hyperpyyaml(HPARAMS)
    torch.save(hp["embedding_model"].state_dict(), folder / "embedding_model.ckpt")
    torch.save(hp["classifier"].state_dict(), folder / "classifier.ckpt")
    norm = hp["mean_var_norm_emb"]
    norm(torch.randn(8, 1, 24), torch.ones(8))  # accumulate global statistics
    norm._save(folder / "mean_var_norm_emb.ckpt")
    enc = hp["label_encoder"]
    enc.update_from_iterable(["spk_a", "spk_b", "spk_c"])
    enc.save(folder / "label_encoder.txt")
    return folder
