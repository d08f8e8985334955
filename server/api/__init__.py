"""One servicer per proto service: validate the request, convert proto to domain, call the store, convert back."""
