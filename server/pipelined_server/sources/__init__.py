"""Where model weights come from: converters for foreign formats and the catalogue of embedded models."""
