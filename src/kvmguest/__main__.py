from kvmguest.cli.lean import main

main()
