//! An HTTP Kubernetes API-server double for Weft's tests.
