"""The web dashboard the controller serves at /ui/: pages over the controller's own API."""
