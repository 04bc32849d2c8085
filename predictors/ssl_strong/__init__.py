"""The UTMOS strong learner: SSL encoder + domain/listener embeddings + BLSTM (model, losses, augmentation, training, UTMOS22 import)."""
