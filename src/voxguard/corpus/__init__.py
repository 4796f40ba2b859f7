"""The labelled training corpus: real speech found locally, synthetic speech made here, a manifest of both."""
