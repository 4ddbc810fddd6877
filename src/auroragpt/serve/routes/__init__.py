"""The HTTP routes, one router per endpoint family; `serve.app.create_app` mounts them."""
