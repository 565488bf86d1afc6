from lolctl.cli import main

main()
