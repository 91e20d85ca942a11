"""The listener side: the HTTP/1.1 server protocol, proxy exchanges, routes, the Gateway."""
