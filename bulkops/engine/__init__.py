"""The client side: trio + httpx. The only place that does client IO."""
