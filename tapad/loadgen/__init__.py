"""Load tools: send POST and GET traffic with the production mix, keep a ledger, report."""
