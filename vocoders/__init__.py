"""Token-based vocoders: SSL unit tokenizer, unit HiFi-GAN, resynthesis evaluation."""
