"""The paid inference gateway (`pm gateway run`) and its customer (`pm infer`).

tickets.py  quote tickets and the request ids they pay (why a request id alone is no credential)
served.py   the durable record of paid requests claimed and served (each served once)
api.py      the OpenAI-compatible request and response shapes, errors included
service.py  the aiohttp application: /healthz, /v1/models, /v1/quote, /v1/completions, /v1/chat/completions
run.py      the daemon: chain, spec, swarm node, HTTP site, signal handling
customer.py `pm infer`: quote, pay on-chain, fetch the completion
commands.py the typer commands
"""
