from kvmguest.cli.main import main

main()
