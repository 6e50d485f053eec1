"""The configuration: model_list.yaml's models (`models`), how it is loaded (`loading`), and the
parts it names: Router settings, agent types, model aliases."""
