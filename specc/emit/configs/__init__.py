"""Each stage kind's config builder: the `"params"` object of its `config.json`, built from a
validated Spec (torch-free, cheap to import). The stage registry (`specc.pipeline`) names which
builder each stage kind uses; the runtime only reads the files these produce.

    data.py       build_data_config, build_tokenize_config
    pretrain.py   build_pretrain_config (pretrain and pretrain_tpu)
    alignment.py  build_alignment_configs (one per alignment stage), build_deploy_config
    evaluate.py   build_eval_config; the paths every builder shares (absolute, tokenizer_location)
"""
