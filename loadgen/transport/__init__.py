"""Transport layer: the only place that touches sockets and gevent."""
