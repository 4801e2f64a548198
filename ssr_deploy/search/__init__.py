"""SSR search: supernet, SSR loss, hierarchical progressive shrinking, extraction."""
