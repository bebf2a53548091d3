from keyplane.cli.main import main

main()
