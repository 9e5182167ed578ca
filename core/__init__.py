"""ViViT Factorised Encoder with a frozen spatial transformer: model, freezing, init, engine, trainer."""
