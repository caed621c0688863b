from tapad.cli import main

main()
