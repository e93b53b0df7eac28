"""Internal node-to-node and storage messages, apart from the public API."""
