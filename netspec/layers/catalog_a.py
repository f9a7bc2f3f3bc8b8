"""Caffe layer catalog, part a."""
