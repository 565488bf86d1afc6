"""LoRA zoos: datasets of LoRAs with known properties, built from recipes."""
