"""Plain-PyTorch model components: scorers, attention, encoder, bridge, decoders, Seq2Seq."""
