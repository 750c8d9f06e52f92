from resource_management.libraries.script.script import Script


def default(name, default_value):
    """Walk /a/b/c in the command JSON; the fallback when any part is missing."""
    node = Script.get_config()
    for part in name.strip("/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return default_value
        node = node[part]
    return node
