"""Delivery channels: one adapter per channel behind the `Channel` interface in `channels.base`."""
