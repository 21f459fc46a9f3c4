"""The trainer service: Kafka events -> prequential eval + incremental training -> checkpoint
-> TorchScript export -> Triton (explicit model control)."""
