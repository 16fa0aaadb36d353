"""Running packages on board agents over gRPC."""
