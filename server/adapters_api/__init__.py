"""Adapter administration over HTTP (admin scope): push, list, show, promote, rollback, delete."""
