from comtunnel.cli import main

raise SystemExit(main())
