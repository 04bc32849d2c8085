"""Whisper-encoder MOS predictor (MOSA-Net+ style head: BLSTM + attention pooling)."""
