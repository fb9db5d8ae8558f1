"""``python -m medsearch_api`` / ``medsearch-api``: run the gateway with uvicorn (settings from MEDSEARCH_*)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medsearch-api", description="medsearch GraphQL gateway")
    parser.add_argument("--host", help="listen address (default: MEDSEARCH_API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default: MEDSEARCH_API_PORT or 8000)")
    parser.add_argument("--export-schema", action="store_true", help="print the GraphQL SDL and exit")
    parser.add_argument("--compat", action="store_true", help="with --export-schema: the seed-compat schema")
    args = parser.parse_args(argv)
    if args.export_schema:
        if args.compat:
            from medsearch_api.compat import compat_schema

            sys.stdout.write(compat_schema.as_str().rstrip() + "\n")
        else:
            from medsearch_api.schema import schema

            sys.stdout.write(schema.as_str().rstrip() + "\n")
        return 0

    import uvicorn

    from medsearch.contracts.settings import ApiSettings
    from medsearch_api.app import create_app
    from medsearch_api.auth import AuthConfigError

    settings = ApiSettings()
    if args.host:
        settings = settings.model_copy(update={"api_host": args.host})
    if args.port:
        settings = settings.model_copy(update={"api_port": args.port})
    try:
        app = create_app(settings)
    except AuthConfigError as err:
        print(f"medsearch-api: {err}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level=settings.log_level.lower(),
                proxy_headers=False, server_header=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
