"""`python -m stockade.agent run --host H --controller URL --token-file F`: the agent alone
(its command line is agent.command's)."""

from stockade.agent.command import main

if __name__ == "__main__":
    main()
