from ridematch_nb.cli import main

raise SystemExit(main())
