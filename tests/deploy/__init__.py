"""Deployment artefacts: the Dockerfile and the helm/baton chart."""
