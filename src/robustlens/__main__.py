from robustlens.cli.main import main

raise SystemExit(main())
