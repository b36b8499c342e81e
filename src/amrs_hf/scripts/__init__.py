"""One script per stage, each with `make_parser()` and `main(argv)`; exposed as `amrs <stage>`."""
