"""Caffe layer catalog, part b."""
