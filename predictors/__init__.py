"""MOS predictors: SSL strong learner, Whisper-based predictor, weak learners, stacking."""
