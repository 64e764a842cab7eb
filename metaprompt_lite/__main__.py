from metaprompt_lite.cli import main

raise SystemExit(main())
