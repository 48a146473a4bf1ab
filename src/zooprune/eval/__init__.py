"""Accuracy evaluation: one runner loop, datasets as data, a resumable prediction cache."""
