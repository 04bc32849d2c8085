"""Pure numeric metric cores: arrays in, numbers out. No files, no resampling, no registry."""
